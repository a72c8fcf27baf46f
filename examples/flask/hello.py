"""hello, in Flask: GET / answers "Hello, World!"; GET /healthz answers "ok".

Any language joins the mesh: read PORT, listen on it, answer a health check."""

import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, World!"


@app.get("/healthz")
def healthz():
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
