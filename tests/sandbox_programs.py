"""Hostile programs shared by the sandbox tests of both backends."""


def ipc_programs(key: int) -> tuple[str, str]:
    """(a program that plants SysV shm/semaphore/queue objects and a POSIX queue under ``key``,
    a program that reports which of them it can still find); ``f(0)`` returns four booleans."""
    plant = f"""import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def f(x):
    planted = [libc.shmget({key}, 4096, 0o1600) >= 0, libc.semget({key + 1}, 1, 0o1600) >= 0,
               libc.msgget({key + 2}, 0o1600) >= 0]
    try:
        open('/dev/mqueue/laimark-plant', 'w').close()
        planted.append(True)
    except OSError:
        planted.append(False)
    return planted
"""
    find = f"""import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def f(x):
    return [libc.shmget({key}, 0, 0) >= 0, libc.semget({key + 1}, 0, 0) >= 0, libc.msgget({key + 2}, 0) >= 0,
            os.path.exists('/dev/mqueue/laimark-plant')]
"""
    return plant, find
