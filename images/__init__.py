"""Building, running and measuring the container images (``make image``, the image tests)."""
