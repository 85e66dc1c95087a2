"""`mailveil demo`: the two incidents replayed on the embedded defaults, in one process, with
an in-process mail sink standing in for the customers' mailboxes."""
