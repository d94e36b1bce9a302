"""placeholder"""
def register(commands, handlers):
    pass
