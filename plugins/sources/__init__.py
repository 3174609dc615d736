"""The built-in source plugins (a file or a package folder each; all named in `DEFAULT_PLUGINS`)."""
