"""Triggers: the deferred waits of the operators and sensors (also usable in an ``AssetWatcher``)."""
