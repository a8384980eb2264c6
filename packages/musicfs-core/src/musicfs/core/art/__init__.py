"""Cover art: `covers` finds an album's picture (folder images or embedded,
`pictures`), `rendering` resizes it into the three cover files, `imagestore`
keeps them on disk within a limit."""
