def normalise(name):
    return name.strip().lower()
