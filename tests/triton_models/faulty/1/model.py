"""A Triton model in our layout that misbehaves on request, for the client's fault tests.

What it answers depends on the first word of `target_text`: ok (one second of a tone), dtype
(INT32 samples), shape ([2, N]), empty, nan, huge (200 s), loud (int16-scaled), missing (no
waveform), error (an error response), slow (ok after 5 s). It needs only numpy, so a server
with it alone starts in a second.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(24000 * seconds), dtype=np.float32) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]


class TritonPythonModel:
    def initialize(self, args):
        self.requests = 0

    def execute(self, requests):
        out = []
        for r in requests:
            self.requests += 1
            text = pb_utils.get_input_tensor_by_name(r, "target_text").as_numpy().reshape(-1)[0].decode()
            mode = text.split()[0] if text.split() else "ok"
            if mode == "slow":
                time.sleep(5)
            wave = {
                "dtype": lambda: (tone(1) * 1000).astype(np.int32),
                "shape": lambda: np.concatenate([tone(1), tone(1)]),
                "empty": lambda: np.zeros((1, 0), np.float32),
                "nan": lambda: np.full((1, 24000), np.nan, np.float32),
                "huge": lambda: tone(200),
                "loud": lambda: tone(1) * 30000,
            }.get(mode, lambda: tone(1))()
            if mode == "error":
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("the model broke")))
            elif mode == "missing":
                out.append(pb_utils.InferenceResponse(output_tensors=[]))
            else:
                out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("waveform", wave)]))
        return out
