"""Qt-free core of QuantDesk: plain data, plain functions and generators (a test enforces no Qt)."""
