"""Faces: found (MTCNN, YuNet, SCRFD), landmarked (dlib's 5 points), aligned to each embedder's chip,
judged for quality, embedded, checked for liveness (MiniFASNet), and followed as tracks that vote
k of n before a gate camera decides. Whom a vote names is the caller's (gates/): this package
never looks at the gallery."""
