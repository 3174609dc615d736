"""ishowttsd: a daemon that lets a livestreamer's chat speak."""

__version__ = "0.1.0"
