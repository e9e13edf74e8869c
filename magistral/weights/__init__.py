"""Weights the project trains and ships (magistral-mini), served by default."""
