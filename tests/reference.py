"""Reference computations over the standard library, written from the specifications,
for tests to compare Sealink's own (C, Python, pyca) against."""

import hmac


def noise_hkdf(chaining_key, input_key_material, num_outputs):
    """The Noise Protocol Framework's HKDF (revision 34, section 4.3) over hmac."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    out, prev = [], b""
    for i in range(1, num_outputs + 1):
        prev = hmac.digest(temp_key, prev + bytes([i]), "sha256")
        out.append(prev)
    return tuple(out)
