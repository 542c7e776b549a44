"""Media input and output: header checks, audio decoding, template frames, MP4 encoding.

Everything that touches a file format lives here (on top of PyAV); engines only ever see
NumPy frames and sample arrays.
"""
