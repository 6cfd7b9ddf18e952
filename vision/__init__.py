"""What cameras see. The currency shared by every sub-package sits at the top: `frames.Frame`,
`detections.Detections`, image decoding with limits (`images`), non-maximum suppression (`nms`)
and the camera settings files (`cameras`). Sub-packages: `faces/` (find, align, embed, check
liveness, track and vote), `throws/` (motion, facade calibration, falling-object tracks) and
`streams/` (camera readers and the loops that drive frames through faces and throws). Nothing here
knows residents or rules: that is `gates/`."""
