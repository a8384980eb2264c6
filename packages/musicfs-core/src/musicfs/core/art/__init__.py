"""Cover art: finding, extracting and resizing the pictures of an album."""
