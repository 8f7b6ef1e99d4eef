"""Recording demonstrations: keyboard, teleop sources, the fixed-rate capture session (DESIGN §2-3)."""
