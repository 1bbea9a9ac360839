"""Storage of the shared health record: resources, their versions and search-index rows."""
