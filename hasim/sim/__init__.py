"""The SimPy model: network, load balancers, apiservers, clients, control loops, faults."""
