"""Message keys: how a producer keys an event, which decides its partition; one seam."""
