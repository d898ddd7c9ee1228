"""The model core: site-conditioned Student-t VAE with the implicit optimal prior.

Pure, synchronous, device-agnostic torch code. Modules:

    specs       frozen `ModelSpec`, `TrainSpec`, `ThresholdSpec` (plain numbers)
    device      `resolve_device("auto"|"cpu"|"cuda")`, the only place that asks about CUDA
    nn          MLP building block
    vae         encoder q(z|x,s) -> Normal, decoders p(x|z,s) -> Independent(StudentT|Normal)
    prior       density-ratio discriminator T(z) ~ log q(z)/N(z; 0, I)
    objective   ELBO terms and the discriminator's logistic loss
    training    `fit`: alternating VAE / discriminator epochs, early stopping, report
    report      `TrainingReport`, `EpochStats`
    scoring     importance-sampled -log p(x|s) and per-sensor contributions
    scaler      robust standardization (median / IQR with a floor)
    thresholds  per-site calibration at a target false-positive rate (quantile + POT)
"""
