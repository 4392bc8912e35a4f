"""What measures: paired timing and its intervals, machine noise, memory, agreement with float64,
and the machine itself."""
