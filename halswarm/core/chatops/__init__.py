"""ChatOps (issue 20): pure rules of the chat front-ends (command catalog, roles, replay window, embeds,
buttons)."""
