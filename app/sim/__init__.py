"""Simulated robot cell: a MuJoCo tabletop with a Panda-like arm, cameras, tasks and experts.

Importing this package imports nothing heavy; ``app.sim.gl`` picks the OpenGL backend the first time
a module that needs mujoco is imported.
"""
