"""The ServerApp: trustfl's federation loop, server round (pipeline, DP) and run directory over Flower."""

from pathlib import Path

from trustfl.federation.flower.server_app import make_server_app

app = make_server_app(Path(__file__).resolve().parent.parent)  # `config` paths are relative to the app folder
