"""Recording demonstrations: keyboard, teleop sources, the fixed-rate capture session."""
