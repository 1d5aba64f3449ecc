"""Helpers shared by test modules: builders, stand-ins and fixtures' machinery (no tests here)."""
