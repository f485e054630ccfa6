"""The app's own tests: what the deploy's `test` step runs (`manage.py test`) before a release may go live."""

from django.test import SimpleTestCase, TestCase

from .models import Note


class HealthTests(SimpleTestCase):
    databases = {"default"}

    def test_health_answers_ok_with_the_version(self) -> None:
        response = self.client.get("/health")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.content.startswith(b"ok "))


class NoteTests(TestCase):
    def test_notes_list_what_was_written(self) -> None:
        Note.objects.create(text="Abi 2027")
        response = self.client.get("/notes")
        self.assertEqual(response.status_code, 200)
        self.assertIn("Abi 2027", response.content.decode())
