"""Layer 2: capture, lower, compile and export models into artifacts."""
