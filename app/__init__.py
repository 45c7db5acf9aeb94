"""Qt-free core of the station: session, devices, simulated cell, safety, feedback, recording."""
