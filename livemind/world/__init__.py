"""The live world: typed records, simulator, event store and dataset loaders."""
