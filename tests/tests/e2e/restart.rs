//! A restart on the same data dir keeps users, tokens, images and id sequences.

use facesim_client::{pb, Client};
use facesim_tests::{demo_subset, import_demo, TestServer};

async fn listing(client: &Client) -> Vec<pb::Image> {
    let request = pb::ListImagesRequest { page_size: 100, ..Default::default() };
    client.datasets().list_images(request).await.unwrap().into_inner().images
}

async fn face_crop(client: &Client, image_id: u64) -> Vec<u8> {
    let request = pb::GetImageDataRequest { image_id, variant: pb::ImageVariant::Face as i32 };
    client.datasets().get_image_data(request).await.unwrap().into_inner().data
}

#[tokio::test]
async fn restart_keeps_everything() {
    let server = TestServer::start().await;
    let annotator = server.user("anna", pb::Role::Annotator).await;
    let client = server.admin().await;
    let first = import_demo(&client, 2).await;
    assert_eq!(first.imported, 10);
    let before = listing(&client).await;
    let face_before = face_crop(&client, first.results[3].image_id).await;
    drop(client);

    let server = server.restart().await;
    let client = server.admin().await;
    assert_eq!(listing(&client).await, before);
    assert_eq!(face_crop(&client, first.results[3].image_id).await, face_before);

    // Tokens made before the restart still work; the bootstrap admin was not duplicated.
    let anna = server.client(Some(&annotator)).await;
    let me = anna.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().user.unwrap();
    assert_eq!((me.name.as_str(), me.role), ("anna", pb::Role::Annotator as i32));
    let users = client.admin().list_users(pb::ListUsersRequest::default()).await.unwrap().into_inner().users;
    assert_eq!(users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), vec!["admin", "anna"]);

    // Duplicates are still recognised and new ids continue after the old ones.
    let again = client.import_files("demo", demo_subset(3), |_, _| {}).await.unwrap();
    assert_eq!((again.imported, again.duplicates), (5, 10));
    let max_before = first.results.iter().map(|r| r.image_id).max().unwrap();
    assert!(again
        .results
        .iter()
        .filter(|r| r.outcome == pb::ImportOutcome::Imported as i32)
        .all(|r| r.image_id > max_before));
}
