"""One-off measurements, each behind a command: agreement tables and drift, profile, compile time, the
compile, autotune and block-length studies, the Net's drawings, the GPU check and the data-parallel step."""
