"""Hook specifications: the whole plugin API of ishowttsd.

A plugin is a module or a package: a ``*.py`` file or a folder with an ``__init__.py`` in a
plugin folder (a package's relative imports work), or a module named by an entry point in the
``ishowtts`` group. The built-ins are plugins like any other (``DEFAULT_PLUGINS`` in
:mod:`ishowttsd.plugins`) and use only what a plugin may use: this module,
:mod:`ishowttsd.source`, :mod:`ishowttsd.sink`, :mod:`ishowttsd.engines.base`,
:mod:`ishowttsd.messages` (the values and the payload readers ``as_int``/``as_str``),
:mod:`ishowttsd.reconnect` (the backoff and the session loop of a live source),
:mod:`ishowttsd.channels` (frames to front-door clients, e.g. audio to browser overlays), and
``read_secret`` and ``ConfigError`` from :mod:`ishowttsd.config`.

Plugins use functions decorated by :data:`hookimpl`. Each registration hook receives a
``register`` callback; call it once per class you provide::

    from ishowttsd.hookspecs import hookimpl
    from ishowttsd.source import Source

    class Hello(Source):
        type = "hello"
        async def run(self):
            self.emit(Message(platform="hello", kind=Kind.DANMAKU, text="hi"))

    @hookimpl
    def ishowtts_register_sources(register):
        register(Hello)
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ishowtts")
hookimpl = pluggy.HookimplMarker("ishowtts")


@hookspec
def ishowtts_register_sources(register):
    """Register source classes (subclasses of :class:`ishowttsd.source.Source`).

    ``register(cls)`` makes ``cls.type`` usable as ``type = "..."`` in a ``[[sources]]``
    table; the table's other keys are validated by ``cls.Settings``.
    """


@hookspec
def ishowtts_register_sinks(register):
    """Register sink classes (subclasses of :class:`ishowttsd.sink.Sink`).

    ``register(cls)`` makes ``cls.type`` usable in a ``[[sinks]]`` table.
    """


@hookspec
def ishowtts_register_engines(register):
    """Register TTS engine classes (subclasses of :class:`ishowttsd.engines.base.Engine`).

    ``register(cls)`` makes ``cls.name`` usable as ``[engine] default = "..."``; the
    engine's own settings come from the ``[engine.<name>]`` table, validated by
    ``cls.Settings``. Keep heavy imports (torch) inside ``load()``, not at module level.
    """


@hookspec
def ishowtts_rewrite_text(text, message, language):
    """Rewrite the text of a message before it is said (a translation, a custom lexicon).

    Called for every message moderation lets through, after the built-in pronunciation step
    (nicknames, ``[moderation.replacements]``, emoji, numbers) and before the template is
    filled. ``text`` is the text so far (earlier plugins' rewrites included), ``message`` the
    :class:`ishowttsd.messages.Message` (read it, do not change it), ``language`` ``"zh"`` or
    ``"en"`` as judged from the text's script. Return the new text, or None to leave it.
    Return ``""`` to say nothing of the text (a chat line is then dropped as ``empty``).

    Plugins are called one after another in the order they are loaded (built-ins, entry
    points, then the plugin folders in order, files by name), each seeing the previous one's
    result. A plugin that raises or returns something other than a string is reported (log,
    a ``pronounce.rewrite_failed`` event, a counter in ``status``) and skipped: the message is
    said without its rewrite. The call is on the event loop: keep it fast (no network).
    """
