"""VOIN (section 5.4): occlusion-aware video object inpainting, a chapter of its own so that its code
never makes notebooks 04-06 stale (their DVC deps list the video subpackages they run).

``data``: VOI samples; ``flow_targets``: a sample's exact clean-scene flow and DIS initial flow;
``flow``: the residual U-Net flow completion (5.4.2), its losses, training and EPE evaluation;
``propagation``: the forward-backward check and amodal-only flow-guided propagation (5.4.3);
``clip_inputs``: the input layout every learned inpainter reads. Table 5.8's baselines: ``sttn``
(STTN-like, no flow), ``classical`` (DFVI-like, FGVC-like with ``edge_flow``'s edge-guided flow
completion, TELEA alone) scored by ``baseline_eval``.
``pipeline``: inference on a whole video in sliding windows; ``runs``: a run directory on disk;
``inpaint_io``: the mask folders ``instseg inpaint`` reads; ``toy``: a toy video and random-init run."""
