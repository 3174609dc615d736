"""The built-in sink plugins (a file or a package folder each; all named in `DEFAULT_PLUGINS`)."""
