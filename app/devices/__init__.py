"""Hardware boundary: cameras (RealSense live/recorded, simulated) and arms (sim, xArm, UR, Franka)."""
