"""api, in Flask: GET /api?data=X answers {"result": X}; GET /healthz answers "ok"."""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/api")
def api():
    return jsonify({"result": request.args.get("data")})


@app.get("/healthz")
def healthz():
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8002")))
