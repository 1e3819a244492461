"""Live state: the index of the rooms live now and their current SIDs (index), and the rooms live at
any time of a recorded world (rooms). Imports no model."""
