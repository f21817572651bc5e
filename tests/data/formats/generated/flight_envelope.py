MAX_ALTITUDE_M = 4200


def stall_speed(mass_kg: float) -> float:
    """Falcon stalls below 31 m/s at its 600 kg reference mass."""
    return 31.0 * (mass_kg / 600) ** 0.5


class Envelope:
    def ceiling(self) -> int:
        # 最大飞行高度为四千二百米
        return MAX_ALTITUDE_M
