"""PySide6 user interface: windows, views and a thin bridge that runs core generators off the GUI thread."""
