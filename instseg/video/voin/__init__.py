"""VOIN (section 5.4): occlusion-aware video object inpainting, a chapter of its own so that its code
never makes notebooks 04-06 stale (their DVC deps list the video subpackages they run)."""
