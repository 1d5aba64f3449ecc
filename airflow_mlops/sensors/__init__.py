"""Sensors: waits that defer to the triggerer and hold no worker slot."""
