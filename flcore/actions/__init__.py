"""The actions: one function per action, a request in and a response dict out."""
