"""The forecaster family beyond the paper's CRNN, one file per family (OpenSTL's layout).

Every family maps a window of frames to next-frame forecasts behind one interface
(:class:`crnn.models.base.Forecaster`)::

    x: float (B, T, C, H, W) in [0, 1]  ->  y: (B, T, C, H, W), y[:, t] = forecast of frame t + 1

and is *causal*: ``y[:, t]`` depends on ``x[:, :t + 1]`` only, so the per-age errors of every
family (ages 15..30 from inputs 10..25) are honest forecasts, never copies of a frame the model saw.

* :mod:`crnn.models.convlstm` -- ConvLSTM (Shi et al., NeurIPS 2015);
* :mod:`crnn.models.predrnn` -- PredRNN, stacked spatiotemporal LSTMs (Wang et al., NeurIPS 2017);
* :mod:`crnn.models.simvp` -- SimVP with the gSTA translator (Gao et al., CVPR 2022; Tan et al.,
  SimVP v2 / TAU, CVPR 2023);
* :mod:`crnn.models.timevp` -- TimeVP, SimVP conditioned on real-valued ages (FiLM from sinusoidal
  time embeddings): also ``forward(frames, ages, mask, target_ages)`` for irregular histories and
  any later target ages (issue #14);
* :mod:`crnn.models.analog` -- the training-free analog forecast (nearest neighbours in a bank);
* the paper's CRNN and the persistence / linear baselines live in :mod:`crnn.model`, whose
  :func:`crnn.model.build_model` builds any family from a ``ModelConfig`` (``model.kind``).
"""
