"""The training stages, one module each, in the order a run goes through them:

    mma        paper section 3.1: the multi-task CNN on face images (mma.py; its metrics:
               mma_eval.py; its ablation: mma_ablation.py)
    features   the frozen MMA over every frame of every video, cached (features.py; for
               Hume-Reaction's video files: features_hume.py)
    mrnn       paper section 3.2: GRU + masked routing + FC on the cached vectors (mrnn.py)
    e2e        both networks fine-tuned together from pixels (e2e.py)
    report     what the stages measured, in one place (report.py)

``mmarnn_min.pipeline`` runs them in a run directory; ``python -m mmarnn_min.train`` is its
command line.
"""
