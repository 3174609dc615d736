"""The HTTP front door: the control room page, the OBS overlay, the JSON API over the same
verbs as the control socket, the event stream, and OpenAI-compatible `/v1/audio/speech`.

- `server.py`: the part the daemon runs (uvicorn in the daemon's event loop);
- `auth.py`: token, login codes, sessions, the overlay key, Host and Origin checks;
- `routes.py`: pages, `/api/<verb>`, uploads, history audio, event and overlay streams;
- `speech.py`: `/v1/audio/speech`; `http.py`: error statuses, JSON and bounded bodies;
- `static/`: the pages (plain HTML, CSS and JavaScript; no build step, no CDN).
"""

from ishowttsd.web.server import WebServer

__all__ = ["WebServer"]
