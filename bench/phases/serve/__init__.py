"""The serve phase: MLPerf LoadGen's scenarios per backend (SUT, settings, Server search, rows, logs)."""
