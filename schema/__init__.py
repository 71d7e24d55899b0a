"""SQL shipped with retland: views and macros run in every warehouse connection, in file-name order."""
