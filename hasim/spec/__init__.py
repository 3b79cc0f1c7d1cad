"""hasim's the scenario: its schema, validation and units."""
