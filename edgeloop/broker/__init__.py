def running_bootstrap():
    return None
