"""The sample database: its one definition and the loader that puts it into a server."""
