"""Flight envelope of the Falcon demonstrator: the limits the autopilot enforces.

This procedure was written after the spring outage, when the relay stayed down for forty minutes because nobody knew which host held the configuration. Keep this page current when hosts change.
"""

MAX_ALTITUDE_M = 4200


def stall_speed(mass_kg: float) -> float:
    """Falcon stalls below 31 m/s at its 600 kg reference mass.

    The stall speed scales with the square root of the mass: a heavier aircraft needs more lift,
    hence more speed, before the wing carries it. Flap settings are not modelled here.
    """
    return 31.0 * (mass_kg / 600) ** 0.5


class Envelope:
    def ceiling(self) -> int:
        # 最大飞行高度为四千二百米
        return MAX_ALTITUDE_M
