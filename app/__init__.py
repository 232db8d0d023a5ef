"""QuantDesk: run GGUF language models locally with an honest fit, verified files and measured quality."""

__version__ = "0.1.0"
APP_NAME = "QuantDesk"
