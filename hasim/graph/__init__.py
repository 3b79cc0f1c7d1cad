"""hasim's the topology graph, its audit, drawing and rendered LB configurations."""
