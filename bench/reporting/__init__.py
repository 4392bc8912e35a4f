"""What a person reads: REPORT.md and its charts, compare, calibration, and the shared formatters."""
