"""Layer 1: TVM kernel rules and fusion patterns, each with a numpy reference."""
